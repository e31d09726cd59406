from vlbench.cli import main

main()
