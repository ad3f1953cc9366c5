"""Swing in PySpark DataFrames: the comparison point a Spark shop would write.

Same graph as ours (the capped `SwingGraph`: sampled item -> users lists, full user -> items lists,
user weights), same formula:
  1. P = item-users self-join on item, u < v            -> (i, u, v)      one row per user pair of an item
  2. per distinct (u, v): common = array_intersect(I_u, I_v), c = |common|, w = w_u w_v / (alpha2 + c)
  3. P join (u, v) -> explode common as j, j != i      -> (i, j, w)
  4. group by (i, j) sum w; row_number over i by (score desc, j asc) < k
Runs on `local[N]` bound to 127.0.0.1 (loopback only, UI off). Needs `pip install llm-i2i[bench]`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llm_i2i.i2i.swing import SwingGraph


def spark_session(cores: int = 2, driver_memory: str = "12g", shuffle_partitions: int = 16, tmp_dir: str | None = None):
    from pyspark.sql import SparkSession

    b = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("swing-benchmark")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "true")
    )
    if tmp_dir:
        b = b.config("spark.local.dir", tmp_dir)
    return b.getOrCreate()


def write_graph_parquet(graph: SwingGraph, directory: Path) -> dict[str, Path]:
    """The three inputs as Parquet (not timed: ours gets the same graph already in memory too)."""
    directory.mkdir(parents=True, exist_ok=True)
    n_users = len(graph.user_indptr) - 1
    paths = {name: directory / f"{name}.parquet" for name in ("user_items", "item_users", "user_weight")}
    pq.write_table(pa.table({"u": np.repeat(np.arange(n_users, dtype=np.int32), np.diff(graph.user_indptr)),
                             "j": graph.user_items}), paths["user_items"])
    pq.write_table(pa.table({"i": np.repeat(np.arange(graph.n_items, dtype=np.int32), np.diff(graph.item_indptr)),
                             "u": graph.item_users}), paths["item_users"])
    pq.write_table(pa.table({"u": np.arange(n_users, dtype=np.int32), "w": graph.user_weight}), paths["user_weight"])
    return paths


def swing_spark(spark, paths: dict[str, Path], k: int, alpha2: float, out_path: Path) -> dict:
    """Run the pipeline, write (item, neighbor, score, rank) Parquet to `out_path`; returns timings."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    ui = spark.read.parquet(str(paths["user_items"]))
    iu = spark.read.parquet(str(paths["item_users"]))
    w = spark.read.parquet(str(paths["user_weight"]))
    a, b = iu.alias("a"), iu.alias("b")
    triples = a.join(b, (F.col("a.i") == F.col("b.i")) & (F.col("a.u") < F.col("b.u"))).select(
        F.col("a.i").alias("i"), F.col("a.u").alias("u"), F.col("b.u").alias("v"))
    lists = ui.groupBy("u").agg(F.array_sort(F.collect_list("j")).alias("items"))
    pairs = (
        triples.select("u", "v").distinct()
        .join(lists.select("u", F.col("items").alias("iu")), "u")
        .join(lists.select(F.col("u").alias("v"), F.col("items").alias("iv")), "v")
        .join(w.select("u", F.col("w").alias("wu")), "u")
        .join(w.select(F.col("u").alias("v"), F.col("w").alias("wv")), "v")
        .select("u", "v", F.array_intersect("iu", "iv").alias("common"), "wu", "wv")
        .select("u", "v", "common", (F.col("wu") * F.col("wv") / (F.lit(alpha2) + F.size("common"))).alias("wt"))
    )
    contrib = triples.join(pairs, ["u", "v"]).select("i", F.explode("common").alias("j"), "wt").where(F.col("j") != F.col("i"))
    scores = contrib.groupBy("i", "j").agg(F.sum("wt").alias("score"))
    win = Window.partitionBy("i").orderBy(F.desc("score"), F.asc("j"))
    top = scores.withColumn("rank", F.row_number().over(win) - 1).where(F.col("rank") < k)
    top.select(F.col("i").alias("item"), F.col("j").alias("neighbor"), "score", "rank").write.mode("overwrite").parquet(str(out_path))
    return {"seconds": time.perf_counter() - t0}


def read_spark_topk(out_path: Path, n_items: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Spark's output as dense [n_items, k] (-1 / -inf padded), to compare with the kernel's."""
    t = pq.read_table(str(out_path))
    item, nb, sc, rank = (t.column(c).to_numpy() for c in ("item", "neighbor", "score", "rank"))
    idx = np.full((n_items, k), -1, np.int32)
    out = np.full((n_items, k), -np.inf)
    idx[item, rank], out[item, rank] = nb, sc
    return idx, out


def run(graph: SwingGraph, k: int, alpha2: float, cores: int = 2, work_dir: str | None = None) -> dict:
    """Time Spark on `graph`; returns timings and its dense top-k for checking."""
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="swing_spark_") as tmp:
        tmp = Path(tmp)
        paths = write_graph_parquet(graph, tmp / "in")
        spark = spark_session(cores, tmp_dir=str(tmp / "spark"))
        try:
            stats = swing_spark(spark, paths, k, alpha2, tmp / "out")
        finally:
            spark.stop()
        idx, sc = read_spark_topk(tmp / "out", graph.n_items, k)
    return {**stats, "idx": idx, "scores": sc}
