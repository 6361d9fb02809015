from remediation.cli import main

main()
