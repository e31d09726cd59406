"""Built-in task plugins (importing this package registers them)."""

from vlbench.tasks.gqa import task as _gqa  # noqa: F401
from vlbench.tasks.nlvr2 import task as _nlvr2  # noqa: F401
from vlbench.tasks.pretrain import task as _pretrain  # noqa: F401
from vlbench.tasks.vqa import task as _vqa  # noqa: F401
