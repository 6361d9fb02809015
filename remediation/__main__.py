"""`python -m remediation` and the `remediation` console script: the early Ctrl-C handler first (see
remediation/interrupts.py), then the CLI and everything it imports."""

from remediation.interrupts import install_early


def run() -> None:
    install_early()
    from remediation.cli import main

    main()


if __name__ == "__main__":
    run()
