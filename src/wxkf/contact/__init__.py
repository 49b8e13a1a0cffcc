"""Employee → customer messaging (客户联系): customers, tasks, the receive ledger, and LLM tools.

WeCom has no server API for instant one-to-one chat with a staff member's WeChat customers; the only
server path is `externalcontact/add_msg_template`, a task the member confirms in WeCom (wecom-api §9).
"""
