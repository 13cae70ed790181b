from tasks.selectors.base import Selector

SELECTOR = Selector("random", "random", "top", "a random sample of N rows, a new one per seed (the baseline)")
