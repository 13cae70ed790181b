from tasks.selectors.base import PIPELINE_SCORER, Selector

SELECTOR = Selector("car", PIPELINE_SCORER, "car", "IQS scores, CaR's rule under the budget: exactly N rows")
