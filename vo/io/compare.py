"""Compare what two runs made, by content: every product file and every database row.

``python -m vo.io.compare ROOT_A ROOT_B`` prints the files that only one run has, the files whose
contents differ (and where), and the database tables whose rows differ; exit status 1 on any
difference.  The test of restarts uses the same functions.

"Equal" compares contents, not bytes (:func:`digest`): FITS header cards and HDU data or
table columns, HDF5 attributes and datasets, netCDF variables and attributes, AVRO records
(an AVRO file's sync marker is random), PNG pixels, parsed JSON, text; paths inside files
are compared relative to the data root.  Left out, because they record when or how a job did
its work rather than what it made: ``downloaded_at`` in the raw stores (and the raw store
checksum in the database), a manifest's ``skipped`` status (counted as ``downloaded``), an
association receipt's ``associated``/``objects_created`` counts, database ids and
``created_at``, and the ``git_commit`` of the code that ran (``provenance.yaml`` and the
``provenances`` rows).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

#: Folders of the data root that are not products.
NOT_PRODUCTS = {"logs", "benchmarks"}
VOLATILE_ATTRS = {"downloaded_at"}


def products(root):
    """{path relative to the data root: path} of the products (final names only; hidden files and
    folders, such as a killed write's temporary or the cached plans, are not products)."""
    root = Path(root)
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if (path.is_file() and not NOT_PRODUCTS & set(rel.parts) and path.suffix != ".lock"
                and not any(part.startswith(".") for part in rel.parts) and not path.name.startswith("vo.sqlite")):
            out[rel.as_posix()] = path
    return out


def temporaries(root):
    """Files left under temporary names by atomic writes (``.{stem}.XXXX.tmp{suffix}``)."""
    return sorted(p for p in Path(root).rglob(".*") if ".tmp" in p.name)


def _h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:20]


def _array(a, root):
    a = np.asarray(a)
    if a.dtype.kind in "OSUV":
        return _h(repr(a.tolist()).replace(root, "<ROOT>").encode())
    return _h(f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())


def _text(value, root):
    return repr(value).replace(root, "<ROOT>")


def _fits(path, root):
    from astropy.io import fits

    out = {}
    with fits.open(path, memmap=False) as hdul:
        for i, hdu in enumerate(hdul):
            name = f"HDU {i} ({hdu.name})"
            for card in hdu.header.cards:
                out[f"{name} card {card.keyword}"] = _text(card.value, root)
            if hdu.data is None:
                continue
            if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                for col in hdu.columns.names:
                    out[f"{name} column {col}"] = _array(hdu.data[col], root)
            else:
                out[f"{name} data"] = _array(hdu.data, root)
    return out


def _hdf5(path, root):
    import h5py

    out = {}

    def visit(name, obj):
        for key, value in obj.attrs.items():
            if key not in VOLATILE_ATTRS:
                out[f"{name} attr {key}"] = _text(value, root)
        if isinstance(obj, h5py.Dataset):
            out[f"{name} data"] = _array(obj[()], root)

    with h5py.File(path, "r") as f:
        visit("/", f)
        f.visititems(visit)
    return out


def _netcdf(path, root):
    import xarray as xr

    with xr.open_dataset(path) as ds:
        out = {f"attr {k}": _text(v, root) for k, v in ds.attrs.items()}
        for name, var in ds.variables.items():
            out[f"{name} data"] = _array(var.values, root)
            out.update({f"{name} attr {k}": _text(v, root) for k, v in var.attrs.items()})
    return out


def _avro(path, root):
    from fastavro import reader

    with open(path, "rb") as f:
        return {f"record {i}": _h(_text(r, root).encode()) for i, r in enumerate(reader(f))}


def _png(path, root):
    from matplotlib.image import imread

    return {"pixels": _array(imread(path), root)}


def _json(path, root):
    doc = json.loads(Path(path).read_text())
    for source in doc.get("sources", []) if "download_params" in doc else []:
        if source["status"] == "skipped":  # a manifest: stored by an earlier (killed) run
            source["status"] = "downloaded"
    if "objects_created" in doc.get("counts", {}):  # an association receipt
        del doc["counts"]["objects_created"], doc["counts"]["associated"]
    return {"json": _h(_text(doc, root).encode())}


def _plain(path, root):
    text = Path(path).read_text().replace(root, "<ROOT>")
    if Path(path).name == "provenance.yaml":  # the commit that ran it is not what it made
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("git_commit:"))
    return {"text": _h(text.encode())}


READERS = {".fits": _fits, ".h5": _hdf5, ".nc": _netcdf, ".avro": _avro, ".png": _png, ".json": _json}


def digest(path, root):
    """{part of the file: hash of its content} (see the module docstring)."""
    return READERS.get(Path(path).suffix, _plain)(path, str(root))


def digests(root):
    return {rel: digest(path, root) for rel, path in sorted(products(root).items())}


def differences(got: dict, want: dict) -> dict:
    """{file: first differing parts} of two :func:`digests` (files in both)."""
    out = {}
    for rel in sorted(set(got) & set(want)):
        bad = [k for k in sorted(set(got[rel]) | set(want[rel])) if got[rel].get(k) != want[rel].get(k)]
        if bad:
            out[rel] = bad[:5]
    return out


def db_rows(root) -> dict:
    """{table: sorted rows without ids, created_at and the raw stores' checksums}, plus
    ``measurement_objects``: which object each measurement belongs to."""
    con = sqlite3.connect(Path(root) / "vo.sqlite")
    try:
        out = {}
        tables = [r[0] for r in con.execute(
            "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'")]
        for table in tables:
            cols = [r[1] for r in con.execute(f"pragma table_info(\"{table}\")")
                    if r[1] != "id" and not r[1].endswith("_id") and r[1] not in ("created_at", "git_commit")
                    and (table, r[1]) != ("raw_photometry", "checksum")]
            out[table] = sorted(repr(r) for r in con.execute(f"select {', '.join(cols)} from \"{table}\""))
        out["measurement_objects"] = sorted(repr(r) for r in con.execute(
            "select m.filename, m.row_index, o.name from measurements m "
            "left join objects o on m.object_id = o.id"))
        return out
    finally:
        con.close()




def compare(root_a, root_b) -> dict:
    """{"only_a": [...], "only_b": [...], "files": {file: parts}, "tables": {table: (n_a, n_b, n
    differing)}} of two data roots."""
    a, b = digests(root_a), digests(root_b)
    out = {"only_a": sorted(set(a) - set(b)), "only_b": sorted(set(b) - set(a)), "files": differences(a, b),
           "tables": {}}
    if (Path(root_a) / "vo.sqlite").exists() and (Path(root_b) / "vo.sqlite").exists():
        ra, rb = db_rows(root_a), db_rows(root_b)
        for table in sorted(set(ra) | set(rb)):
            x, y = ra.get(table, []), rb.get(table, [])
            if x != y:
                out["tables"][table] = (len(x), len(y), len(set(x) ^ set(y)))
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root_a")
    ap.add_argument("root_b")
    args = ap.parse_args(argv)
    res = compare(args.root_a, args.root_b)
    n_a = len(digests(args.root_a))
    for key in ("only_a", "only_b"):
        for rel in res[key]:
            print(f"{key}: {rel}")
    for rel, parts in res["files"].items():
        print(f"differs: {rel}: {', '.join(parts)}")
    for table, (x, y, n) in res["tables"].items():
        print(f"table {table}: {x} vs {y} rows, {n} differ")
    same = not (res["only_a"] or res["only_b"] or res["files"] or res["tables"])
    print(f"{n_a} files compared: {'all equal' if same else 'differences above'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
