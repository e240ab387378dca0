from onemember.cli import main

main()
