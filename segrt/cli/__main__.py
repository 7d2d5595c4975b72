"""python -m segrt.cli"""

from segrt.cli import main

main()
