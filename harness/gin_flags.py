"""The --gin_file/--gin_param flags every CLI shares, defined once so the CLIs' modules can be
imported together (tests, the suite)."""

from absl import flags

GIN_FILES = flags.DEFINE_multi_string(
    "gin_file", [], "Gin config file(s); repeatable, later files override earlier ones."
)
GIN_PARAMS = flags.DEFINE_multi_string(
    "gin_param", [], "Extra gin bindings, e.g. TrainSpec.num_steps=100; repeatable."
)
