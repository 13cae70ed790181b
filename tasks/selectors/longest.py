from tasks.selectors.base import Selector

SELECTOR = Selector("longest", "length", "top", "the N rows with the longest answers")
