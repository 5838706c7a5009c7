"""Local clusters, as one import: the cluster file, the launcher and `safenet cluster`.

The three live apart - `node.clusterfile` (what clients read), `node.launcher` (the node
processes) and `node.cluster_cli` (the command line) - and this module re-exports them so
code written against `node.cluster` keeps working. New code imports the part it needs;
clients and the event store import `node.clusterfile` only.
"""

from __future__ import annotations

from .cluster_cli import cluster, status_table
from .clusterfile import (
    CLUSTER_FILE,
    DEFAULT_DATA_DIR,
    ENV_VAR,
    BadClusterFile,
    BadClusterRequest,
    ClusterBusy,
    ClusterError,
    ClusterFile,
    ClusterUnavailable,
    InvalidName,
    NoCluster,
    NodeEntry,
    NoSuchNode,
    default_data_dir,
    human_bytes,
    load_cluster_file,
    parse_name,
    resolve_cluster_file,
)
from .launcher import (
    ADMIN_KEY_FILE,
    DEFAULT_REPLICATION,
    LOCK_FILE,
    NODE_KEY_FILE,
    NODE_LOG_FILE,
    START_TIMEOUT,
    STDERR_FILE,
    STDOUT_FILE,
    STOP_TIMEOUT,
    LocalCluster,
    NodeReport,
    Progress,
    WaitState,
    probe_port,
    process_alive,
)

__all__ = [
    "ADMIN_KEY_FILE", "CLUSTER_FILE", "DEFAULT_DATA_DIR", "DEFAULT_REPLICATION", "ENV_VAR", "LOCK_FILE",
    "NODE_KEY_FILE", "NODE_LOG_FILE", "START_TIMEOUT", "STDERR_FILE", "STDOUT_FILE", "STOP_TIMEOUT",
    "BadClusterFile", "BadClusterRequest", "ClusterBusy", "ClusterError", "ClusterFile", "ClusterUnavailable",
    "InvalidName", "LocalCluster", "NoCluster", "NodeEntry", "NodeReport", "NoSuchNode", "Progress", "WaitState",
    "cluster", "default_data_dir", "human_bytes", "load_cluster_file", "parse_name", "probe_port",
    "process_alive", "resolve_cluster_file", "status_table",
]
