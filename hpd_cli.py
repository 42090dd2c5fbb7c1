"""The `hpd` command. Each subcommand parses its flags here and calls one library function.

Bad input surfaces as ValueError or OSError with a message written for the user; the command
prints it as one line (set HPD_DEBUG=1 for the traceback).
"""

import argparse
import os
import sys


def convert_command(args):
    from training.convert import convert

    output = convert(args.source, args.output, to=args.to)
    print(f"Wrote {args.to} model folder: {output}")


def build_parser():
    parser = argparse.ArgumentParser(prog="hpd", description="HPD sentence-embedding toolkit.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        help="convert a sentence-transformers model to an HPD folder, or back",
        description="Convert a sentence-transformers model (2022 or current layout) or HPD folder, local or "
        "a Hub id, into an HPD folder (loads with AutoModel, SentenceTransformer and HPDModel) or into a "
        "classic sentence-transformers stack.",
    )
    convert.add_argument("source", help="model folder or Hub id, e.g. Xuandong/HPD-TinyBERT-F128")
    convert.add_argument("output", help="folder to write")
    convert.add_argument("--to", choices=("hpd", "sentence-transformers"), default="hpd", help="output format (default: hpd)")
    convert.set_defaults(run=convert_command)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    # The command shows its own progress; transformers' per-load bars and reports are noise here.
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        args.run(args)
    except (ValueError, OSError) as error:
        if os.environ.get("HPD_DEBUG"):
            raise
        print(f"hpd {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
