def days_between(start, end):
    from datetime import date
    return (date.fromisoformat(end) - date.fromisoformat(start)).days
