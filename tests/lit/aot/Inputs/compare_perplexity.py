"""Compare the perplexities of two score lines written by quadc eval or a
quadc-built executable's perplexity command.

usage: compare_perplexity.py GOT.txt WANT.txt MAX_RELATIVE_DIFFERENCE

Prints "perplexity GOT vs WANT: relative difference D < MAX" and exits 0
when |GOT - WANT| / WANT < MAX, else prints ">=" and exits 1.
"""
import re
import sys


def perplexity(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"perplexity ([0-9.]+)", text)
    if not match:
        sys.exit(f"{path}: no 'perplexity N' in the output")
    return float(match.group(1))


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    got, want, limit = perplexity(argv[1]), perplexity(argv[2]), float(argv[3])
    diff = abs(got - want) / want
    sign = "<" if diff < limit else ">="
    print(f"perplexity {got} vs {want}: relative difference {diff:.3g} {sign} {limit}")
    return 0 if diff < limit else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
