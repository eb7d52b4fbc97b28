"""`python -m study.cli ...` (what `ray job submit` runs on a cluster) is the `study` command."""

from study.cli.app import main

main()
