"""genmodels.plot"""
