"""The toy base chat model of `make repro`: a small Qwen2 fully fine-tuned at a short context L0 on short
multi-document QA from the built-in world, until it answers in-distribution questions well.

It plays the role of the paper's short-context chat model. It is a cached build step, not the claim, so it
is plain single-process PyTorch (no Ray, no DeepSpeed): one model, one optimizer, one loop.

    path = ensure_toy_base(cfg)      # <cache>/toybase-<hash>/ : config.json, weights, tokenizer, toy_base.json

    worlds.py      the toy worlds and the questions the evaluation keeps for itself
    model.py       the tokenizer corpus and the model shape
    samples.py     QA samples (curriculum) and associative-recall rows, as (token ids, loss weights)
    step.py        the batch, the weighted loss, the optimizer and its LR schedule (the library's)
    validate.py    greedy validation and the diagnosis of what the hits are made of
    diagnose.py    that diagnosis for each seed's cached base, without training (make repro-diagnose)
    checkpoint.py  a resumable build state, saved and loaded
    train.py       the training loop
    cache.py       the cache folder: built once per recipe, resumed across runs

A build may take longer than one sitting: it checkpoints (weights, optimizer, step, curve) into
`<cache>/toybase-<hash>.partial/` at every validation, a run stops after `time_budget_min`, and the next
`ensure_toy_base` goes on from the checkpoint until the base reaches `target_accuracy` or `max_steps`.

Data. Samples are composed by `longctx_core.data.compose.compose_sample` — the same layout the synthesize and
evaluate stages use — from worlds of `data.source.builtin` shape (single-token names, 1-2 sentence
documents) drawn with their own seeds, so one name carries different facts in different worlds and the
model must look the answer up instead of recalling it. A curriculum grows samples from `min_tokens`
(2-4 documents) to L0 (about 8). Every question the evaluation asks — the held-out split of each arm
seed's world — and every validation question is removed from the training worlds (`heldout_questions`).

Loss. Answer tokens (assistant content and its `<|im_end|>`) weigh 1; prompt tokens weigh
`prompt_loss_weight` (an extra LM loss that was measured to speed up learning per step):

    tokens   <s>system..  <u>user: Document [1] ... Question: Where was Far born?  <a>The answer is: Four<e>
    weight    w  w  w ...   w   w   w   w   ...        w    w    w    w    w          1   1   1   1   1    1
"""
