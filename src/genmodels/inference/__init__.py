"""genmodels.inference"""
