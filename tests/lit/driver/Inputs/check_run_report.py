"""Check the perplexity table of a quadc run report against separate tools.

usage: check_run_report.py REPORT.md --fp32 FILE --ptq FILE --quadapter FILE
       --int8 FILE --calib-loss FILE --int8-tolerance X

--fp32, --ptq, --quadapter and --int8 name the output of `quadc eval` (or of
the built executable's perplexity command) for that column: one line per
text, "PATH: N tokens scored (...), mean loss L nats, perplexity P, ...".
The table must give the same token count and the same perplexity to within
the 3 decimals both print. --calib-loss names the output of
`quadc quantize --eval` on the quantized file, whose calibration loss must
equal the report's Quadapter loss on the calibration sequences. Finally the
INT8 column must lie within the relative --int8-tolerance of the Quadapter
fake-quant column. Exits with status 1 and a message naming the text and
the column on the first mismatch.
"""
import argparse
import re
import sys

COLUMNS = ["fp32", "ptq", "quadapter", "int8"]
LINE = re.compile(r"^(.*): (\d+) tokens scored \(window \d+, stride \d+\), mean loss [0-9.]+ nats, "
                  r"perplexity ([0-9.]+), [0-9.]+ tokens/s$")


def fail(message):
    print("check_run_report: " + message, file=sys.stderr)
    sys.exit(1)


def read_tool_output(path):
    scores = {}
    for line in open(path):
        match = LINE.match(line.strip())
        if match:
            scores[match.group(1)] = (int(match.group(2)), float(match.group(3)))
    if not scores:
        fail(f"{path} has no perplexity line")
    return scores


def read_table(path):
    """Returns {text: (tokens, [fp32, ptq, quadapter, int8])} and the calibration losses."""
    rows, losses = {}, {}
    section = None
    for line in open(path):
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if section == "Perplexity" and len(cells) == 6 and cells[1].isdigit():
            rows[cells[0]] = (int(cells[1]), [float(c) for c in cells[2:]])
        if section == "LM loss on the calibration sequences" and len(cells) == 2 and cells[0] != "model":
            if not cells[1].startswith("-"):
                losses[cells[0]] = float(cells[1])
    if not rows:
        fail(f"{path} has no perplexity row")
    return rows, losses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("report")
    for column in COLUMNS:
        parser.add_argument("--" + column, required=True)
    parser.add_argument("--calib-loss", required=True)
    parser.add_argument("--int8-tolerance", type=float, required=True)
    args = parser.parse_args()

    rows, losses = read_table(args.report)
    for index, column in enumerate(COLUMNS):
        tool = read_tool_output(getattr(args, column))
        for text, (tokens, values) in rows.items():
            if text not in tool:
                fail(f"the {column} output has no line for {text}")
            tool_tokens, tool_ppl = tool[text]
            if tool_tokens != tokens:
                fail(f"{text}: the report scores {tokens} tokens but the {column} tool scored {tool_tokens}")
            # Both print 3 decimals of the same computation, so allow one
            # unit in the last place for a different rounding.
            if abs(values[index] - tool_ppl) > 1e-3 + 1e-7 * tool_ppl:
                fail(f"{text}: {column} perplexity {values[index]} in the report, {tool_ppl} from the tool")

    for text, (_, values) in rows.items():
        fake, int8 = values[2], values[3]
        if abs(int8 - fake) > args.int8_tolerance * fake:
            fail(f"{text}: INT8 perplexity {int8} is not within {args.int8_tolerance:.2%} of the fake-quant {fake}")

    match = re.search(r"calibration loss ([0-9.]+)", open(args.calib_loss).read())
    if not match:
        fail(f"{args.calib_loss} has no calibration loss")
    if "Quadapter" not in losses:
        fail(f"{args.report} has no Quadapter loss on the calibration sequences")
    if abs(losses["Quadapter"] - float(match.group(1))) > 2e-6:
        fail(f"Quadapter calibration loss {losses['Quadapter']} in the report, {match.group(1)} from quantize --eval")
    print(f"checked {len(rows)} texts")


main()
