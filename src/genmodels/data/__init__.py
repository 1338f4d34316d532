"""genmodels.data"""
