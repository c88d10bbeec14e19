"""Value learning and value-guided decoding, as pure functions over tables, rows and models.

One IRO update, from scored candidates to V_k, in order:

- `reweight`: the candidates of each prompt reweighted toward pi_base * exp(r / beta);
- `targets`: what each response and state regresses to (reward, advantage, the residual on a
  reward prior) and the training rows that carry it (`rows`: their columns);
- `td` and `td_rounds`: TD(lambda)-returns as per-state targets, trained in rounds against a
  target network;
- `training`: the standardised targets, the per-state regression loss and its trainer;
- `scoring`: the sum over value models, sum_i V_i / beta_i, that guides the search.

Reading the config and the artifact store is `iro.pipeline`'s part.
"""
