"""The `ssjdn` command line: core's own subcommands plus those other layers declare as
entry points (group `ssjdn.commands`)."""
