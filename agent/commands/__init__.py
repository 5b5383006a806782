"""``mine-agent`` subcommands, one module each, each with ``add_arguments(parser)`` and ``main(args) -> int``."""
