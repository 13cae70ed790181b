from tasks.selectors.base import PIPELINE_SCORER, Selector

SELECTOR = Selector("top_score", PIPELINE_SCORER, "top", "the N rows with the highest IQS score")
