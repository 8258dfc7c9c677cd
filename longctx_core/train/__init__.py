"""Fine-tuning on Ray Train + DeepSpeed.

    from longctx_core.train.driver import check_inputs, train
    summary = train(cfg, run_dir)      # checks inputs, builds the packed Ray Dataset, fits, publishes the adapter

Modules, in the order a run meets them:
- `driver`: input checks, the step estimate, the `TorchTrainer` launch, the final adapter in <run>/train/adapter.
- `worker`: one Ray Train worker's loop as named phases (torch + DeepSpeed; imported only on the workers).
- `engine`: `build_engine`, the model + DeepSpeed engine from a config (the worker and the benchmarks call it).
- `packing`: samples tokenised and packed into rows on Ray Data. `losses`: chunked cross-entropy.
- `schedule`: the LR schedule. `flops`: model FLOPs, peak FLOP/s per GPU, MFU. `memory`: peak memory.
- `deepspeed_config`: the ZeRO config. `init_adapter`: starting from another run's adapter.
- `state`: the train state a checkpoint holds, checkpoint names and files, data and RNG fingerprints, and
  the storage marker that refuses resuming across a config change.
"""
