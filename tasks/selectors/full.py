from tasks.selectors.base import Selector

# CaR's claim is that its 1,000 rows beat all 52k: this arm trains on the whole pool, the budget aside
SELECTOR = Selector("full", None, "all", "every row of the pool (after dedup and the held-out split), one of each "
                                         "answer group: train on everything")
