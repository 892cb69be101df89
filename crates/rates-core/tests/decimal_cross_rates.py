# Prints every rate of the ECB file as vatcomply's /rates handler computes
# it, for the decimal_cross_rates test. argv[1]: the zip; argv[2]: the
# supported codes, comma-separated. For each line of the file: its date on a
# line, then one line per base in argv[2]'s order: "-" when the base has no
# rate that day, else one field per code in that order, "-" when the code
# has none, else the value the handler puts in its answer (repr of the float
# for base EUR, the rounded Decimal otherwise; float() of it is the answer).
import sys
import zipfile
from decimal import Decimal

codes = sys.argv[2].split(",")
archive = zipfile.ZipFile(sys.argv[1])
member = next(n for n in archive.namelist() if n.lower().endswith(".csv"))
lines = archive.read(member).decode().splitlines()
header = [h.strip() for h in lines[0].split(",")]
columns = [header.index(c) if c in header else None for c in codes]
out = []
for line in lines[1:]:
    fields = line.split(",")
    if not fields[0].strip():
        continue
    # vatcomply holds each value as a float: rates_data = {"EUR": 1.0, ...}.
    rates = {}
    for code, col in zip(codes, columns):
        if code == "EUR":
            rates[code] = 1.0
            continue
        text = fields[col].strip() if col is not None else ""
        if text and text != "N/A":
            rates[code] = float(text)
    out.append(fields[0])
    for base in codes:
        if base not in rates:
            out.append("-")
            continue
        if base == "EUR":
            out.append(" ".join(repr(rates[c]) if c in rates else "-" for c in codes))
            continue
        # The handler's own expressions.
        base_rate = Decimal(str(rates[base]))
        row = []
        for c in codes:
            if c not in rates:
                row.append("-")
            elif c == "EUR":
                row.append(str(round(Decimal("1") / base_rate, 6)))
            else:
                row.append(str(round(Decimal(str(rates[c])) / base_rate, 6)))
        out.append(" ".join(row))
sys.stdout.write("\n".join(out))
sys.stdout.write("\n")
