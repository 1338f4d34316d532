"""genmodels.train"""
