"""`cargo xtask bench --against dlt`: dlt 1.31's rest_api_source over the same five resources
as pipelines/errors.toml (dlt's own header_link paginator, since it rejects the seed's), into
parquet files on local disk. Prints seconds, rows per table and peak RSS as one JSON line."""
import json, os, resource, sys, time

base_url, token, destination = sys.argv[1], sys.argv[2], sys.argv[3]
os.environ["DLT_DATA_DIR"] = os.path.join(destination, "_dlt_data")
os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
import dlt
from dlt.sources.rest_api import rest_api_source

paginator = {"type": "header_link"}
source = rest_api_source({
    "client": {
        "base_url": base_url,
        "auth": {"type": "api_key", "name": "Authorization", "api_key": token, "location": "header"},
    },
    "resource_defaults": {
        "primary_key": "id",
        "write_disposition": "merge",
        "endpoint": {"params": {"per_page": 50}},
    },
    "resources": [
        {"name": "organizations", "endpoint": {"path": "/user/organizations", "data_selector": "data", "paginator": paginator}},
        {"name": "projects", "endpoint": {"path": "/organizations/{organization_id}/projects", "data_selector": "data", "paginator": paginator,
            "params": {"organization_id": {"type": "resolve", "resource": "organizations", "field": "id"}}}},
        {"name": "saved_searches", "endpoint": {"path": "/projects/{project_id}/saved_searches", "data_selector": "data", "paginator": {"type": "single_page"},
            "params": {"project_id": {"type": "resolve", "resource": "projects", "field": "id"}}}},
        {"name": "errors", "endpoint": {"path": "/projects/{project_id}/errors", "data_selector": "data", "paginator": paginator,
            "params": {"project_id": {"type": "resolve", "resource": "projects", "field": "id"}}}},
        {"name": "events", "endpoint": {"path": "/projects/{project_id}/events", "data_selector": "data", "paginator": paginator,
            "params": {"project_id": {"type": "resolve", "resource": "projects", "field": "id"}}}},
    ],
})
pipeline = dlt.pipeline(
    pipeline_name="errlake_bench",
    destination=dlt.destinations.filesystem(bucket_url="file://" + os.path.join(destination, "lake")),
    pipelines_dir=os.path.join(destination, "_pipelines"),
)
started = time.perf_counter()
# Append: the filesystem destination merges only into delta or iceberg tables.
pipeline.run(source, loader_file_format="parquet", write_disposition="append")
seconds = time.perf_counter() - started
rows = pipeline.last_trace.last_normalize_info.row_counts
print(json.dumps({
    "seconds": seconds,
    "events": rows.get("events", 0),
    "rows": rows,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
}), flush=True)
