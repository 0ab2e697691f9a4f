"""Transfer evaluations of a trained model: few-shot linear probes, OOD test sets, shape bias.

The scoring works on numpy arrays a model has already produced (pre-logits features or
1000-way logits), so it runs on the host, needs no accelerator memory, and tests without data;
`features` and `ood_eval` run a run's model to produce those arrays:
  least_squares      closed-form ridge regression behind the few-shot probe
  fewshot            shot sampling, accuracy per shots/seed/l2, summary under TensorBoard tags
  fewshot_datasets   which TFDS datasets and splits the few-shot probe reads (gin-bound)
  fewshot_suite      runs a FewShotSpec over features a caller extracts
  imagenet_subsets   the 200-class subsets of ImageNet-R and ImageNet-A (data)
  ood                OOD test sets, 200-class logit masking, ImageNet ReaL scoring
  shape_bias         Geirhos et al. (2019) cue-conflict shape bias from 1000-way logits
  eval_datasets      the names --eval_datasets and TrainSpec.eval_datasets accept
  features           pre-logits features of a restored run, for the few-shot probe
  ood_eval           the OOD sets and shape bias with a run's model: reading, logits, results
"""
