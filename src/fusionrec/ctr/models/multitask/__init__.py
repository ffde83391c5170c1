"""Multi-task models, as EasyRec builds them: ESMM, MMoE, PLE, DBMTL, SimpleMultiTask.

Each model's ``forward_heads(features)`` returns one logits tensor per task tower, keyed
``_<tower_name>`` (the suffix of EasyRec's output names: ``logits_ctr``, ``probs_ctr``);
``forward`` returns the first tower's (EasyRec's tower order: ESMM's cvr tower first). A
tower's logits are (B,) for one output, (B, num_class) for a multi-class tower.

The towers' losses live in the trainer; ``esmm.esmm_loss`` is ESMM's own (CTR and CTCVR over
the whole impression space, Ma et al., SIGIR 2018, equation 3).
"""
