async def for_client(client_id):
    return []
