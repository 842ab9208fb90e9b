"""placeholder"""
def add_arguments(p): pass
def run_bench(args): pass
