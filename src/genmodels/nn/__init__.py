"""genmodels.nn"""
