"""One module per page; each page is a function of the site, the URL's parts and its query, returning HTML."""
