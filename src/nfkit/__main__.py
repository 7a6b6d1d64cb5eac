from nfkit.cli.main import main

main()
