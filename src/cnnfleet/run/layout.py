"""Every file name of a run folder, in one place: what writes a file and what reads it agree by name.

<run>/
  .hydra/{config,hydra,overrides}.yaml   Hydra's record of the first attempt's command line
  .lock                                  rank 0's flock while a process works in the folder
  state.json                             status, identity and every attempt (run/state.py)
  config.yaml, command.txt, env.json     the resolved config, the command, the environment
  metrics.csv, <job>.log                 metrics of every attempt, the log
  checkpoints/{last,best}.ckpt           the newest and the best checkpoint
  summary.json, classes.json             the result (or a failure's reason), the class names
  last_failure.json, traceback.txt       an attempt's failure after a completed one; a bug's traceback
"""

HYDRA_DIR = ".hydra"
HYDRA_CONFIG = "hydra.yaml"
OVERRIDES = "overrides.yaml"
LOCK_FILE = ".lock"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
COMMAND_FILE = "command.txt"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.csv"
CHECKPOINTS_DIR = "checkpoints"
LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
SUMMARY_FILE = "summary.json"
LAST_FAILURE_FILE = "last_failure.json"
CLASSES_FILE = "classes.json"
TRACEBACK_FILE = "traceback.txt"
