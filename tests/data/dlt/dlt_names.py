"""Table and column names that dlt's relational normalizer gives the recorded fixtures.

Run with dlt 1.31 installed (`pip install "dlt==1.31.*"`) from this folder:
    python dlt_names.py > names.json
The errlake test `normalize_fixtures::names_match_dlt` compares its own names with these.
Each fixture goes through its own pipeline (a dummy destination: only extract and normalize
run), so one fixture's columns never leak into another's.
"""

import json
import pathlib
import sys
import tempfile

import dlt

HERE = pathlib.Path(__file__).parent
DATA = HERE.parent


def names(records, table):
    with tempfile.TemporaryDirectory() as workdir:
        pipeline = dlt.pipeline(
            pipeline_name="names",
            destination="dummy",
            pipelines_dir=workdir,
            dev_mode=True,
        )
        pipeline.extract(dlt.resource(records, name=table))
        pipeline.normalize()
        tables = {}
        for name, t in pipeline.default_schema.tables.items():
            if name.startswith("_dlt"):
                continue
            tables[name] = sorted(t.get("columns", {}).keys())
        return tables


def main():
    out = {}
    for fixture in json.loads((HERE / "fixtures.json").read_text()):
        body = json.loads((DATA / fixture["file"]).read_text())
        records = body if isinstance(body, list) else [body]
        out[fixture["file"]] = names(records, fixture["table"])
    json.dump({"dlt_version": dlt.__version__, "fixtures": out}, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
