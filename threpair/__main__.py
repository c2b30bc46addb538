from threpair.cli import main

main()
