from bocb.cli import main

main()
