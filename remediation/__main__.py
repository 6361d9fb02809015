"""`python -m remediation` and the `remediation` console script: the early Ctrl-C handler first (see
remediation/interrupts.py), then the CLI and everything it imports."""

import sys

from remediation.interrupts import install_early


def run() -> None:
    install_early()
    try:
        from remediation.cli import main

        main()  # click turns a Ctrl-C while a command runs into "Aborted!" and exit 1
    except KeyboardInterrupt:  # ... one while the tool is still starting (importing) reaches here
        sys.stderr.write("remediation: interrupted before the command started; nothing was done\n")
        sys.exit(130)


if __name__ == "__main__":
    run()
