from tasks.selectors.base import Selector

SELECTOR = Selector("cluster_only", None, "top", "round-robin over the clusters, nearest to the centroid first")
