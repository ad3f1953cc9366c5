"""One module per `llm-i2i` subcommand. Each defines `NAME`, `HELP`, `add_arguments(parser)` and
`run(args) -> int`; `llm_i2i.cli` discovers them, so adding a command touches no shared file."""
