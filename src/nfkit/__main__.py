from nfkit.cli.entry import run

run()
