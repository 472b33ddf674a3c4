"""The Recommender page's app (recommender_plugin): data access, charts and pages."""
