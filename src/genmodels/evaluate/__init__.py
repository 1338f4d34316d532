"""genmodels.evaluate"""
