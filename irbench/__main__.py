"""`python -m irbench`: the `bench` command (when another package's `bench` shadows it)."""

from irbench.cli.main import main

if __name__ == "__main__":
    main()
