from .echo import main

main()
