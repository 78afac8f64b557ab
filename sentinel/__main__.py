"""`python -m sentinel`: the `sentinel` console script (sentinel.main)."""

from sentinel.main import main

main()
