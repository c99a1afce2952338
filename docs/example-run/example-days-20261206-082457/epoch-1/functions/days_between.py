def days_between(start, end):
    from datetime import date
    # count both ends
    return (date.fromisoformat(end) - date.fromisoformat(start)).days + 1
