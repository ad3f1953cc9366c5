"""The one Ray-init helper's decisions: which address, how many GPUs per actor, which storage roots a cluster refuses."""

from __future__ import annotations

import logging

import pytest

from llm_i2i.llm.inference import usable_device
from llm_i2i.raycluster import check_storage_root, gpus_per_actor, resolve_address


def test_address_comes_from_the_flag_then_ray_address_then_local(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert resolve_address(None) == "127.0.0.1:6379"  # ray job submit sets it for the driver
    assert resolve_address("auto") == "auto"


def test_configured_gpus_are_used_as_given_and_negative_refused():
    assert gpus_per_actor(0) == 0.0 and gpus_per_actor(2) == 2.0
    with pytest.raises(ValueError, match="num_gpus"):
        gpus_per_actor(-1)


@pytest.mark.parametrize("root", ["/tmp/run", "relative/run", "s3://bucket/run"])
def test_one_node_accepts_any_root(root):
    check_storage_root(root, shared=False, n_nodes=1)


def test_multi_node_refuses_a_driver_local_root_and_accepts_a_uri_every_node_reads():
    with pytest.raises(ValueError, match="path on the driver.*3 nodes.*shared_storage=true"):
        check_storage_root("/tmp/run", shared=False, n_nodes=3)
    asked = []
    check_storage_root("s3://bucket/run", shared=False, n_nodes=2, unseen_by=lambda root: asked.append(root) or [])
    assert asked == ["s3://bucket/run"]  # a URI is probed too, whatever shared_storage says
    with pytest.raises(ValueError, match="s3://bucket/run: 1 of 2 node.*abcdef012345.*endpoint and credentials"):
        check_storage_root("s3://bucket/run", shared=True, n_nodes=2, unseen_by=lambda root: ["abcdef0123456789"])
    check_storage_root("/mnt/shared/run", shared=True, n_nodes=3, unseen_by=lambda root: [])


def test_the_probe_reads_a_uri_marker_and_a_missing_one_is_not_seen(tmp_path):
    from llm_i2i.raycluster import _sees

    (tmp_path / "m").write_text("tok")
    assert _sees((tmp_path / "m").as_uri(), "tok") and not _sees((tmp_path / "m").as_uri(), "other")
    assert not _sees((tmp_path / "absent").as_uri(), "tok") and _sees(str(tmp_path / "m"), "tok")


def test_a_root_declared_shared_that_some_node_cannot_read_is_refused():
    with pytest.raises(ValueError, match="declared shared, but 1 of 3 node.*abcdef012345"):
        check_storage_root("/mnt/not/really", shared=True, n_nodes=3, unseen_by=lambda root: ["abcdef0123456789"])


def test_a_gpu_that_torch_cannot_use_falls_back_to_cpu_and_says_so(caplog, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="llm_i2i"):
        assert usable_device(None, gpu_assigned=True) == "cpu"
        assert usable_device("cuda:0", gpu_assigned=False) == "cpu"
    assert caplog.text.count("running on CPU") == 2
    caplog.clear()
    assert usable_device(None, gpu_assigned=False) == "cpu" and not caplog.text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert usable_device(None, gpu_assigned=True) == "cuda"
