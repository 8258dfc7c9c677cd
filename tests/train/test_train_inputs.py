"""Bad input fails fast with one line naming the key, before any Ray resource is requested; the packed
stream that feeds the workers is complete and deterministic for a seed, and splits into equal shards."""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longctx_core.config import ConfigError, config_from_dict
from longctx_core.errors import LongctxError
from longctx_core.train.driver import check_inputs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"warmup_steps": 10, "max_steps": 10}, "train.warmup_steps: 10 is not below max_steps=10"),
        ({"zero_stage": 1}, "train.zero_stage: Input should be 2 or 3"),
        ({"overlong": "drop"}, "train.overlong: Input should be 'error' or 'truncate'"),
        ({"adam_betas": [0.9, 1.5]}, "train.adam_betas: each must be in [0, 1)"),
        ({"pack_windw": 8}, "unknown config key 'train.pack_windw' (did you mean 'train.pack_window'?)"),
    ],
)
def test_train_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"train": overrides})
    assert str(err.value).startswith(message)


def test_missing_data_is_a_one_line_error(make_train_cfg, tmp_path):
    cfg = make_train_cfg(tmp_path, **{"train.data_path": str(tmp_path / "nowhere")})
    with pytest.raises(LongctxError, match=r"^train.data_path: no Parquet files at .*nowhere \(run"):
        check_inputs(cfg, tmp_path)


def test_rows_without_the_sample_columns_are_refused(make_train_cfg, tmp_path):
    pq.write_table(pa.table({"id": ["a"], "text": ["hello"]}), tmp_path / "part-00000.parquet")
    cfg = make_train_cfg(tmp_path, **{"train.data_path": str(tmp_path)})
    with pytest.raises(LongctxError, match=r"missing column\(s\) \['messages'\]"):
        check_inputs(cfg, tmp_path)


def test_overlong_samples_error_unless_truncation_is_asked_for(make_train_cfg, tmp_path, train_data_dir):
    cfg = make_train_cfg(tmp_path, **{"train.max_seq_len": 160, "data.target_tokens": [150]})
    with pytest.raises(
        LongctxError, match=r"sample\(s\) are longer than train.max_seq_len=160 .*overlong=truncate"
    ):
        check_inputs(cfg, tmp_path)
    ok = make_train_cfg(
        tmp_path, **{"train.max_seq_len": 160, "data.target_tokens": [150], "train.overlong": "truncate"}
    )
    found = check_inputs(ok, tmp_path)
    assert found["data"]["num_samples"] == 96 and found["data"]["overlong"] > 0


def test_entrypoint_bad_input_exits_2_with_one_line(tmp_path, capsys):
    from ray_jobs import train as train_job

    with pytest.raises(SystemExit) as exit_:
        train_job.main(
            [
                f"run.storage_path={tmp_path}",
                f"train.data_path={tmp_path / 'none'}",
                "model.name_or_path=tiny",
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longctx train: error: train.data_path: no Parquet files")
    assert not (tmp_path / "demo").exists()  # nothing written for a run that cannot start


# ---- the Ray Data stream ------------------------------------------------------------------------------------


def _packed_stream(cfg, train_model_dir, train_data_dir):
    from longctx_core.train.packing import packed_dataset, parquet_files

    ds = packed_dataset(parquet_files(train_data_dir), str(train_model_dir), cfg.train, cfg.run.seed, 0.25)
    ds.context.execution_options.preserve_order = True
    return ds


def _consume_splits(ds, n: int) -> list[list[tuple]]:
    """Consume `ds.streaming_split(n, equal=True)` with one thread per split (as n workers would)."""
    out: list[list[tuple]] = [[] for _ in range(n)]

    def eat(i, it):
        for batch in it.iter_batches(batch_size=1, batch_format="numpy"):
            out[i].append(tuple(batch["sample_ids"][0]))

    threads = [
        threading.Thread(target=eat, args=(i, it)) for i, it in enumerate(ds.streaming_split(n, equal=True))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_packed_stream_is_complete_deterministic_and_splits_equally(
    ray_local, make_train_cfg, tmp_path, train_model_dir, train_data_dir
):
    cfg = make_train_cfg(tmp_path)
    rows = _packed_stream(cfg, train_model_dir, train_data_dir).take_all()
    ids = [s for r in rows for s in r["sample_ids"]]
    assert sorted(ids) == [f"s{i:04d}" for i in range(96)]  # every sample exactly once
    assert all(len(r["input_ids"]) == sum(r["seq_lens"]) <= cfg.train.max_seq_len for r in rows)
    assert len(rows) < 96 / 2  # packed: several samples per row

    first = _consume_splits(_packed_stream(cfg, train_model_dir, train_data_dir), 2)
    second = _consume_splits(_packed_stream(cfg, train_model_dir, train_data_dir), 2)
    assert len(first[0]) == len(first[1])  # equal shards: equal step counts on every rank
    assert first == second  # each rank sees the same rows in the same order: resumable by position
    # The shards are disjoint parts of the same stream (equal=True only drops an odd last row).
    sharded = set(first[0]) | set(first[1])
    assert len(sharded) == 2 * len(first[0]) >= len(rows) - 1
    assert sharded <= {tuple(r["sample_ids"]) for r in rows}
