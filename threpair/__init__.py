"""threpair: repair lip-synced talking-head video with an identity-specific VQ autoencoder."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("threpair")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"
