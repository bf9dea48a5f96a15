async def open_for_client(client_id):
    return []
