from cityhall.cli import main

main()
